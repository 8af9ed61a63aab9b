//! `rsup.v1.System`.

use rsup_proto::v1::{InfoRequest, InfoResponse, system_server::System};
use rsup_runtime::Runtime;
use tonic::{Request, Response, Status};

pub struct Service {
    runtime: Runtime,
}

impl Service {
    pub fn new(runtime: Runtime) -> Self {
        Service { runtime }
    }
}

#[tonic::async_trait]
impl System for Service {
    async fn info(&self, _: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        let counts = self.runtime.counts();
        Ok(Response::new(InfoResponse {
            version: env!("CARGO_PKG_VERSION").into(),
            state_dir: self.runtime.state_dir().display().to_string(),
            containers: u32::try_from(counts.total).unwrap_or(u32::MAX),
            running: u32::try_from(counts.running).unwrap_or(u32::MAX),
            cgroup_driver: self
                .runtime
                .cgroup_driver()
                .map_or("none", |d| d.as_str())
                .into(),
        }))
    }
}
