//! Cutting nodes off: isolation (a node off every network) and partitions (groups on
//! networks of their own), recorded so that healing restores exactly what was there. (Swarm
//! filters packets instead: see `swarm/filter.rs`.)

use std::collections::{BTreeMap, HashMap};

use bollard::container::InspectContainerOptions;
use bollard::models::{EndpointIpamConfig, EndpointSettings};
use bollard::network::{ConnectNetworkOptions, CreateNetworkOptions, DisconnectNetworkOptions};
use bollard::Docker;

use super::PROJECT_LABEL;
use crate::backend::BackendError;

/// Where an isolated node was attached, to reattach it identically.
#[derive(Clone, Debug)]
pub(crate) struct Attachment {
    pub(crate) network: String,
    pub(crate) ip: String,
    pub(crate) aliases: Vec<String>,
}

/// A node a partition moved off its networks onto a group network.
#[derive(Clone, Debug)]
struct Moved {
    node: String,
    /// Where it was, to put it back identically.
    from: Vec<Attachment>,
    /// The group network it is on now.
    to: String,
}

/// What a `partition` changed, so `heal-partition` (and only it) undoes exactly that.
#[derive(Clone, Debug, Default)]
struct Partitioned {
    networks: Vec<String>,
    moved: Vec<Moved>,
}

/// The network faults in force on one run's cluster.
pub(crate) struct Cuts {
    docker: Docker,
    project: String,
    isolated: BTreeMap<String, Vec<Attachment>>,
    partitioned: Option<Partitioned>,
}

impl Cuts {
    pub(crate) fn new(docker: Docker, project: String) -> Cuts {
        Cuts { docker, project, isolated: BTreeMap::new(), partitioned: None }
    }

    /// Where a container is attached now: each network with its address and DNS aliases.
    async fn attachments(&self, id: &str) -> Result<Vec<Attachment>, BackendError> {
        let info = self.docker.inspect_container(id, None::<InspectContainerOptions>).await?;
        let networks = info.network_settings.and_then(|n| n.networks).unwrap_or_default();
        Ok(networks
            .into_iter()
            .map(|(network, ep)| Attachment {
                network,
                ip: ep.ip_address.unwrap_or_default(),
                aliases: ep.aliases.unwrap_or_default(),
            })
            .collect())
    }

    /// Attaches a container to `a.network` with `a`'s address (when it has one) and aliases.
    async fn attach(&self, id: &str, a: &Attachment) -> Result<(), BackendError> {
        let endpoint_config = EndpointSettings {
            aliases: Some(a.aliases.clone()),
            ipam_config: (!a.ip.is_empty()).then(|| EndpointIpamConfig {
                ipv4_address: Some(a.ip.clone()),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.docker
            .connect_network(
                &a.network,
                ConnectNetworkOptions { container: id.to_owned(), endpoint_config },
            )
            .await?;
        Ok(())
    }

    /// Attaches as before, or, when a node restarted meanwhile was given that address (compose
    /// pins none), with the aliases alone, which is what peers resolve.
    async fn reattach(&self, id: &str, a: &Attachment) -> Result<(), BackendError> {
        match self.attach(id, a).await {
            Err(BackendError::Docker(bollard::errors::Error::DockerResponseServerError {
                status_code: 403,
                ..
            })) => self.attach(id, &Attachment { ip: String::new(), ..a.clone() }).await,
            other => other,
        }
    }

    async fn detach(&self, id: &str, network: &str) -> Result<(), BackendError> {
        self.docker
            .disconnect_network(
                network,
                DisconnectNetworkOptions { container: id.to_owned(), force: true },
            )
            .await?;
        Ok(())
    }

    /// Takes the node's container (`id`) off every network it is on.
    pub(crate) async fn isolate(&mut self, node: &str, id: &str) -> Result<(), BackendError> {
        let attachments = self.attachments(id).await?;
        for a in &attachments {
            self.detach(id, &a.network).await?;
        }
        self.isolated.insert(node.to_owned(), attachments);
        Ok(())
    }

    /// Puts the node's container back on the networks it was on, with the same address and
    /// DNS aliases (`network disconnect` dropped both); a network it is on already is left
    /// alone.
    pub(crate) async fn heal(&mut self, node: &str, id: &str) -> Result<(), BackendError> {
        let Some(attachments) = self.isolated.remove(node) else {
            return Err(BackendError::Command(format!("{node} is not isolated")));
        };
        let now: Vec<String> = self.attachments(id).await?.into_iter().map(|a| a.network).collect();
        for a in attachments.iter().filter(|a| !now.contains(&a.network)) {
            self.reattach(id, a).await?;
        }
        Ok(())
    }

    /// The first group stays on the cluster network; each other group moves to a network of
    /// its own (labelled with the project, so teardown and `clean` remove it). A container is
    /// connected to its group network (with its DNS aliases) before it leaves the cluster
    /// network: docker then publishes its ports on the new network, so the runner keeps
    /// reaching it, on a new host port that `Backend::endpoint` reads afresh.
    /// `ids` holds each node's container.
    pub(crate) async fn partition(
        &mut self,
        groups: &[Vec<String>],
        ids: &BTreeMap<String, String>,
    ) -> Result<(), BackendError> {
        if self.partitioned.is_some() {
            return Err(BackendError::Command(
                "the cluster is already partitioned; add a `heal-partition` step first".into(),
            ));
        }
        let id_of = |node: &str| {
            ids.get(node)
                .cloned()
                .ok_or_else(|| BackendError::Command(format!("{node} has no container")))
        };
        // Recorded as it goes, so that a failure half-way can still be healed.
        self.partitioned = Some(Partitioned::default());
        for (k, group) in groups.iter().enumerate().skip(1) {
            let network = format!("{}_partition{k}", self.project);
            let made = self
                .docker
                .create_network(CreateNetworkOptions {
                    name: network.clone(),
                    check_duplicate: true,
                    driver: "bridge".to_owned(),
                    labels: HashMap::from([(PROJECT_LABEL.to_owned(), self.project.clone())]),
                    ..Default::default()
                })
                .await?;
            let network_id = made.id;
            self.partitioned.as_mut().expect("set above").networks.push(network_id.clone());
            for node in group {
                let id = id_of(node)?;
                let from = self.attachments(&id).await?;
                let mut aliases: Vec<String> =
                    from.iter().flat_map(|a| a.aliases.iter().cloned()).collect();
                aliases.sort();
                aliases.dedup();
                let to = Attachment { network: network_id.clone(), ip: String::new(), aliases };
                self.attach(&id, &to).await?;
                self.partitioned.as_mut().expect("set above").moved.push(Moved {
                    node: node.clone(),
                    from: from.clone(),
                    to: network.clone(),
                });
                for a in &from {
                    self.detach(&id, &a.network).await?;
                }
            }
        }
        Ok(())
    }

    /// Undoes `partition`: each moved node back on its networks, off its group's, and the
    /// group networks removed. `ids` holds each node's container now.
    pub(crate) async fn heal_partition(
        &mut self,
        ids: &BTreeMap<String, String>,
    ) -> Result<(), BackendError> {
        let Some(p) = self.partitioned.take() else {
            return Err(BackendError::Command("the cluster is not partitioned".into()));
        };
        for m in &p.moved {
            let Some(id) = ids.get(&m.node) else { continue };
            let now: Vec<String> =
                self.attachments(id).await?.into_iter().map(|a| a.network).collect();
            for a in m.from.iter().filter(|a| !now.contains(&a.network)) {
                self.reattach(id, a).await?;
            }
            if now.contains(&m.to) {
                self.detach(id, &m.to).await?;
            }
        }
        for n in &p.networks {
            self.docker.remove_network(n).await?;
        }
        Ok(())
    }
}
