//! `rsup.v1.Supervisors`.

use std::time::Duration;

use rsup_proto::v1 as pb;
use rsup_proto::v1::supervisors_server::Supervisors;
use rsup_runtime::Runtime;
use rsup_runtime::names::SupervisorName;
use rsup_runtime::supervisors::{SupervisorInfo, SupervisorRequest};
use tonic::{Request, Response, Status};

use super::{parse, parse_opt, status};

pub struct Service {
    runtime: Runtime,
}

impl Service {
    pub fn new(runtime: Runtime) -> Self {
        Service { runtime }
    }
}

fn supervisor(s: SupervisorInfo) -> pb::Supervisor {
    pb::Supervisor {
        name: s.spec.name.into_string(),
        strategy: s.spec.strategy.to_string(),
        intensity: s.spec.intensity,
        period_ms: u64::try_from(s.spec.period.as_millis()).unwrap_or(u64::MAX),
        parent: s.spec.parent.map(String::from).unwrap_or_default(),
        state: if s.failed { "failed" } else { "running" }.into(),
        restarts: s.restarts,
        children: s
            .children
            .into_iter()
            .map(|c| pb::SupervisorChild {
                kind: c.kind.as_str().into(),
                name: c.name,
                state: c.state.into(),
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl Supervisors for Service {
    async fn create(
        &self,
        req: Request<pb::CreateSupervisorRequest>,
    ) -> Result<Response<pb::Supervisor>, Status> {
        let r = req.into_inner();
        let info = self
            .runtime
            .create_supervisor(SupervisorRequest {
                name: parse(&r.name, "name", SupervisorName::parse_as)?,
                strategy: r.strategy,
                intensity: r.intensity,
                period: Duration::from_millis(r.period_ms),
                parent: parse_opt(&r.parent, "parent", SupervisorName::parse_as)?,
            })
            .map_err(status)?;
        Ok(Response::new(supervisor(info)))
    }

    async fn remove(
        &self,
        req: Request<pb::RemoveSupervisorRequest>,
    ) -> Result<Response<pb::RemoveSupervisorResponse>, Status> {
        let name = parse(&req.into_inner().name, "name", SupervisorName::parse_as)?;
        self.runtime.remove_supervisor(&name).map_err(status)?;
        Ok(Response::new(pb::RemoveSupervisorResponse {}))
    }

    async fn list(
        &self,
        _: Request<pb::ListSupervisorsRequest>,
    ) -> Result<Response<pb::ListSupervisorsResponse>, Status> {
        let supervisors = self
            .runtime
            .supervisors()
            .into_iter()
            .map(supervisor)
            .collect();
        Ok(Response::new(pb::ListSupervisorsResponse { supervisors }))
    }
}
