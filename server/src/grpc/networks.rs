//! `rsup.v1.Networks`.

use rsup_proto::v1 as pb;
use rsup_proto::v1::networks_server::Networks;
use rsup_runtime::Runtime;
use rsup_runtime::names::NetworkName;
use rsup_runtime::networks::{NetworkInfo, NetworkRequest};
use tonic::{Request, Response, Status};

use super::{parse, status};

pub struct Service {
    runtime: Runtime,
}

impl Service {
    pub fn new(runtime: Runtime) -> Self {
        Service { runtime }
    }
}

fn network(n: NetworkInfo) -> pb::Network {
    pb::Network {
        name: n.spec.name.into_string(),
        subnet: n.spec.subnet.to_string(),
        gateway: n.spec.gateway.to_string(),
        internal: n.spec.internal,
        bridge: n.spec.bridge,
        created_at: Some(n.created_at.into()),
        containers: n
            .containers
            .into_iter()
            .map(|(container, ip)| pb::NetworkLease {
                container,
                ip: ip.to_string(),
            })
            .collect(),
        dns: n.dns.map(|a| a.to_string()).unwrap_or_default(),
    }
}

#[tonic::async_trait]
impl Networks for Service {
    async fn create(
        &self,
        req: Request<pb::CreateNetworkRequest>,
    ) -> Result<Response<pb::Network>, Status> {
        let r = req.into_inner();
        let name = parse(&r.name, "name", NetworkName::parse_as)?;
        let n = self
            .runtime
            .create_network(NetworkRequest {
                name,
                subnet: r.subnet,
                gateway: r.gateway,
                internal: r.internal,
                labels: Default::default(),
            })
            .await
            .map_err(status)?;
        Ok(Response::new(network(n)))
    }

    async fn remove(
        &self,
        req: Request<pb::RemoveNetworkRequest>,
    ) -> Result<Response<pb::RemoveNetworkResponse>, Status> {
        let name = parse(&req.into_inner().name, "name", NetworkName::parse_as)?;
        self.runtime.remove_network(&name).await.map_err(status)?;
        Ok(Response::new(pb::RemoveNetworkResponse {}))
    }

    async fn list(
        &self,
        _: Request<pb::ListNetworksRequest>,
    ) -> Result<Response<pb::ListNetworksResponse>, Status> {
        let networks = self.runtime.networks().into_iter().map(network).collect();
        Ok(Response::new(pb::ListNetworksResponse { networks }))
    }

    async fn inspect(
        &self,
        req: Request<pb::InspectNetworkRequest>,
    ) -> Result<Response<pb::Network>, Status> {
        let name = parse(&req.into_inner().name, "name", NetworkName::parse_as)?;
        let n = self.runtime.inspect_network(&name).map_err(status)?;
        Ok(Response::new(network(n)))
    }
}
