//! Cutting nodes off: isolation (a node off every network) and partitions (groups on
//! networks of their own), recorded so that healing restores exactly what was there.

use bollard::container::InspectContainerOptions;
use bollard::models::{EndpointIpamConfig, EndpointSettings};
use bollard::network::{ConnectNetworkOptions, DisconnectNetworkOptions};

use super::DockerBackend;
use crate::backend::BackendError;

/// Where an isolated node was attached, to reattach it identically.
#[derive(Clone, Debug)]
pub(super) struct Attachment {
    pub(super) network: String,
    pub(super) ip: String,
    pub(super) aliases: Vec<String>,
}

/// A node a partition moved off its networks onto a group network.
#[derive(Clone, Debug)]
pub(super) struct Moved {
    pub(super) node: String,
    /// Where it was, to put it back identically.
    pub(super) from: Vec<Attachment>,
    /// The group network it is on now.
    pub(super) to: String,
}

/// What a `partition` changed, so `heal-partition` (and only it) undoes exactly that.
#[derive(Clone, Debug, Default)]
pub(super) struct Partitioned {
    pub(super) networks: Vec<String>,
    pub(super) moved: Vec<Moved>,
}

impl DockerBackend {
    /// Where a container is attached now: each network with its address and DNS aliases.
    pub(super) async fn attachments(&self, id: &str) -> Result<Vec<Attachment>, BackendError> {
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
    pub(super) async fn attach(&self, id: &str, a: &Attachment) -> Result<(), BackendError> {
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

    pub(super) async fn detach(&self, id: &str, network: &str) -> Result<(), BackendError> {
        self.docker
            .disconnect_network(
                network,
                DisconnectNetworkOptions { container: id.to_owned(), force: true },
            )
            .await?;
        Ok(())
    }
}
