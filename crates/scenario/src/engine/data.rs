//! Steps on the data: `write`, `read`, and `verify` (every acknowledged write read back).

use super::*;

impl<B: Backend> Engine<B> {
    /// The target as a background writer uses it: a write times out after 1 s, plus 1 s per
    /// 256 KiB of value (three fsyncs of the entry).
    pub(super) fn writer_target(&self, value_bytes: usize) -> Target {
        let http = self
            .profile
            .client_builder()
            .timeout(Duration::from_millis(1000 + (value_bytes as u64 / 262_144) * 1000))
            .connect_timeout(Duration::from_millis(300))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("http client");
        Target::new(std::sync::Arc::new(self.profile.target.clone()), http, self.backend.executor())
    }

    pub(super) async fn verify(&mut self, v: &crate::model::Verify) -> StepResult {
        self.stop_writer().await;
        let timeout = self.timeout(v.timeout);
        let writes = self.writes.lock().unwrap().clone();
        let leader = self.resolve_one(&Selector(vec!["leader".into()]), timeout).await?;
        let start = Instant::now();
        // Read everything back from the leader, 16 at a time; a key that fails that way (e.g. a
        // redirect after a leader change) is read again below, one by one, with retries.
        let mut fast: BTreeMap<usize, Option<String>> = BTreeMap::new();
        if let Ok(base) = self.backend.endpoint(&leader).await {
            use futures_util::StreamExt as _;
            let asks: Vec<(usize, String)> = writes
                .iter()
                .enumerate()
                .filter(|(_, w)| w.outcome != WriteOutcome::Failed)
                .map(|(i, w)| (i, w.key.clone()))
                .collect();
            // No redirects on this pass: a key that gets one is read again below.
            let none = Endpoints::default();
            let (target, base, none) = (&self.target, &base, &none);
            fast = futures_util::stream::iter(asks)
                .map(|(i, key)| async move { (i, target.get(none, base, &key).await) })
                .buffer_unordered(16)
                .filter_map(|(i, got)| async move { got.ok().map(|v| (i, v)) })
                .collect()
                .await;
        }
        let mut found: Vec<Option<Option<String>>> = Vec::with_capacity(writes.len());
        for (i, w) in writes.iter().enumerate() {
            if w.outcome == WriteOutcome::Failed {
                found.push(None);
                continue;
            }
            let got = match fast.remove(&i) {
                Some(v) => v,
                None => {
                    let left = timeout.saturating_sub(start.elapsed());
                    until(left, Duration::from_millis(100), async || {
                        let base =
                            self.backend.endpoint(&leader).await.map_err(|e| e.to_string())?;
                        self.target.get(&self.endpoints, &base, &w.key).await
                    })
                    .await
                    .map_err(|e| format!("reading back {:?} via {leader}: {e}", w.key))?
                }
            };
            found.push(Some(got));
        }
        let last_recovery = self
            .generations
            .iter()
            .filter_map(|g| match g {
                GenerationEvent::Recovered { at_ms, .. } => Some(*at_ms),
                _ => None,
            })
            .max();
        let r = crate::measure::tally(&writes, &found, &self.stale_spans(), last_recovery);
        let summary = r.summary();
        // The stale-acknowledged writes get a line of their own, under the summary.
        let stale = r.stale_line().map(|l| format!("\n{l}")).unwrap_or_default();
        self.verification = Some(r.clone());
        if r.acknowledged < v.min_acked.unwrap_or(1) {
            return Err(format!(
                "only {} acknowledged writes (min_acked {}): {summary}{stale}",
                r.acknowledged,
                v.min_acked.unwrap_or(1)
            ));
        }
        // With `recovery_may_lose`, what a recovery lost is the RPO, reported but not bounded.
        let counted = if v.recovery_may_lose { r.lost - r.lost_before_recovery } else { r.lost };
        if counted > v.max_lost {
            let shown: Vec<&str> = r.lost_keys.iter().take(10).map(String::as_str).collect();
            let which =
                if v.recovery_may_lose { " acknowledged after the last recovery" } else { "" };
            return Err(format!(
                "{summary}; {counted} lost{which}, more than max_lost = {}; lost keys include {}{stale}",
                v.max_lost,
                shown.join(", ")
            ));
        }
        // Unbounded by default only when the scenario accepts a split brain.
        let max_stale = v.max_stale_acked.or((!self.scenario.allow_split_brain).then_some(0));
        if let Some(max) = max_stale.filter(|m| r.stale_acked > *m) {
            return Err(format!(
                "{summary}; more than max_stale_acked = {max} acknowledged by a stale cluster{stale}"
            ));
        }
        Ok(format!("{summary}{stale}"))
    }

    pub(super) async fn write(&mut self, w: &crate::model::Write) -> StepResult {
        let timeout = self.timeout(w.timeout);
        let via_sel = or_default(&w.via, "leader");
        let mut keys: Vec<(String, String)> =
            w.keys.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let prefix = w.prefix.clone().unwrap_or_else(|| "key".into());
        for i in 0..w.count {
            let value = format!("{prefix}-value-{i}");
            let value = crate::measure::sized_value(&value, w.value_bytes.unwrap_or(0) as usize);
            keys.push((format!("{prefix}-{i}"), value));
        }
        let start = Instant::now();
        let mut via_used = String::new();
        for (k, v) in &keys {
            let left = timeout.saturating_sub(start.elapsed());
            let via = until(left, Duration::from_millis(100), async || {
                let via = self.resolve_one(&via_sel, timeout).await?;
                let base = self.backend.endpoint(&via).await.map_err(|e| e.to_string())?;
                match self.target.put(&self.endpoints, &base, k, v).await {
                    Ok(_) => Ok(via),
                    Err(e) => Err(e.detail),
                }
            })
            .await
            .map_err(|e| format!("write of {k:?} not acknowledged within {timeout:?}: {e}"))?;
            via_used = via;
            self.written.insert(k.clone(), v.clone());
        }
        Ok(format!("{} keys acknowledged via {via_used}", keys.len()))
    }

    pub(super) async fn read(&mut self, r: &crate::model::Read) -> StepResult {
        let timeout = self.timeout(r.timeout);
        let via_sel = or_default(&r.via, "leader");
        let mut keys: BTreeMap<String, String> = r.keys.clone();
        if r.all_written {
            keys.extend(self.written.clone());
        }
        let nodes = self.resolve(&via_sel, timeout).await?;
        let start = Instant::now();
        for n in &nodes {
            for (k, want) in &keys {
                let left = timeout.saturating_sub(start.elapsed());
                until(left, Duration::from_millis(100), async || {
                    let base = self.backend.endpoint(n).await.map_err(|e| e.to_string())?;
                    match self.target.get(&self.endpoints, &base, k).await {
                        Ok(Some(v)) if &v == want => Ok(()),
                        Ok(other) => Err(format!("via {n}: {k:?} is {other:?}, expected {want:?}")),
                        Err(e) => Err(format!("via {n}: reading {k:?}: {e}")),
                    }
                })
                .await?;
            }
        }
        Ok(format!("{} keys read back via {}", keys.len(), nodes.join(", ")))
    }
}
