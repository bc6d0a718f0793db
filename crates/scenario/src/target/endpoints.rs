//! Where the runner reaches each node now, shared by the engine and the background tasks: the
//! engine refreshes it whenever a node starts, stops or moves (a container restart may change
//! its published port).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

/// Node name -> the URL the runner reaches it at (None while stopped), plus each node's
/// in-cluster URL so redirects can be followed.
#[derive(Clone, Default)]
pub struct Endpoints {
    inner: Arc<RwLock<EndpointMap>>,
}

#[derive(Default)]
struct EndpointMap {
    runner: BTreeMap<String, Option<String>>,
    /// Every URL the cluster knows the node by (the profile's, the one it reports).
    in_cluster: BTreeMap<String, Vec<String>>,
}

impl Endpoints {
    pub fn set(&self, node: &str, url: Option<String>) {
        self.inner.write().unwrap().runner.insert(node.to_owned(), url);
    }
    pub fn set_in_cluster(&self, node: &str, urls: Vec<String>) {
        self.inner.write().unwrap().in_cluster.insert(node.to_owned(), urls);
    }
    pub fn get(&self, node: &str) -> Option<String> {
        self.inner.read().unwrap().runner.get(node).cloned().flatten()
    }
    /// The node the runner reaches at `base` (a runner URL such as `http://127.0.0.1:32771`).
    pub fn node_of(&self, base: &str) -> Option<String> {
        let m = self.inner.read().unwrap();
        m.runner
            .iter()
            .find(|(_, u)| {
                u.as_deref().is_some_and(|u| u.trim_end_matches('/') == base.trim_end_matches('/'))
            })
            .map(|(n, _)| n.clone())
    }
    /// The runner base URL `url` starts with (a redirect already made reachable).
    pub fn base_of(&self, url: &str) -> Option<String> {
        let m = self.inner.read().unwrap();
        m.runner.values().flatten().find(|b| url.starts_with(b.as_str())).cloned()
    }
    pub fn all(&self) -> Vec<(String, Option<String>)> {
        self.inner.read().unwrap().runner.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
    /// Rewrites an in-cluster URL (a redirect, a leader URL) into a runner-reachable one.
    pub fn reachable(&self, url: &str) -> String {
        let m = self.inner.read().unwrap();
        for (node, bases) in &m.in_cluster {
            for base in bases {
                if let Some(rest) = url.strip_prefix(base.as_str()) {
                    if let Some(Some(e)) = m.runner.get(node) {
                        return format!("{e}{rest}");
                    }
                }
            }
        }
        url.to_owned()
    }
}
