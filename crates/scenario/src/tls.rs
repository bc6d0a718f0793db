//! TLS for one run: a throwaway CA, a certificate for every node of the profile (its in-cluster
//! host, `127.0.0.1` and `localhost`) and one for the runner itself, which trusts only that CA
//! and presents its certificate (the cluster's admin routes require one). Files are owner-only
//! under the run's directory and go with it.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A profile's `[tls]`: the env keys that point a node at its files, and where the node sees
/// its directory. A profile without it always runs in plain HTTP.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSpec {
    pub cert_key: String,
    pub key_key: String,
    pub ca_key: String,
    /// The node's TLS directory inside its container (the docker backend mounts it there).
    pub dir_in_container: String,
}

/// The run's CA and certificates.
#[derive(Debug)]
pub struct RunTls {
    /// `<dir>/<node>/` holds `<node>.pem`, `<node>.key` and `ca.pem`.
    pub dir: PathBuf,
    ca_pem: Vec<u8>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
}

impl RunTls {
    /// A new CA in `dir`, a certificate per `(node, host)`, and the runner's own.
    pub fn create(dir: &Path, nodes: &[(String, String)]) -> Result<RunTls, String> {
        let ca = certs::Ca::generate().map_err(|e| e.to_string())?;
        certs::private_dir(dir).map_err(|e| e.to_string())?;
        for (node, host) in nodes {
            let hosts = [host.clone(), "127.0.0.1".into(), "localhost".into()];
            certs::write_node(&dir.join(node), &ca, node, &hosts).map_err(|e| e.to_string())?;
        }
        let runner = ca.issue("chaos-runner", &["localhost".into()]).map_err(|e| e.to_string())?;
        Ok(RunTls {
            dir: dir.to_owned(),
            ca_pem: ca.cert_pem().into_bytes(),
            cert_pem: runner.cert_pem.into_bytes(),
            key_pem: runner.key_pem.into_bytes(),
        })
    }

    /// The env lines that point `node` at its files, as the node sees `dir` (`tls_dir`).
    pub fn env_lines(&self, spec: &TlsSpec, node: &str, tls_dir: &str) -> String {
        format!(
            "\n# TLS, added by the chaos runner for this run\n{}={tls_dir}/{node}.pem\n{}={tls_dir}/{node}.key\n{}={tls_dir}/ca.pem\n",
            spec.cert_key, spec.key_key, spec.ca_key
        )
    }

    fn builder(&self) -> reqwest::ClientBuilder {
        // They parse: `create` made them with rcgen.
        certs::client_builder(&self.ca_pem, &self.cert_pem, &self.key_pem)
            .expect("the run's own certificates parse")
    }
}

/// Every HTTP client of the runner starts here: with the run's CA and identity when TLS is
/// on, plain otherwise.
pub fn client_builder(tls: Option<&RunTls>) -> reqwest::ClientBuilder {
    match tls {
        Some(t) => t.builder(),
        None => reqwest::Client::builder(),
    }
}

/// `http://host:port` -> `host`.
pub fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let authority = rest.split('/').next().unwrap_or(rest);
    authority.rsplit_once(':').map(|(h, _)| h).unwrap_or(authority)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_ca_issues_every_node_and_the_runner_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let nodes = [("node1".to_owned(), "node1".to_owned()), ("node2".into(), "node2".into())];
        let t = RunTls::create(&dir.path().join("tls"), &nodes).unwrap();
        for (n, _) in &nodes {
            assert!(t.dir.join(n).join(format!("{n}.key")).exists());
            assert!(t.dir.join(n).join("ca.pem").exists());
        }
        client_builder(Some(&t)).build().unwrap();
        assert_eq!(host_of("http://node1:8080"), "node1");
        assert_eq!(host_of("https://10.0.0.2:8080/api"), "10.0.0.2");
    }
}
