//! `rsup.v1.Volumes`.

use rsup_proto::v1 as pb;
use rsup_proto::v1::volumes_server::Volumes;
use rsup_runtime::Runtime;
use rsup_runtime::names::VolumeName;
use rsup_runtime::volumes::VolumeInfo;
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

fn volume(v: VolumeInfo) -> pb::Volume {
    pb::Volume {
        name: v.name,
        mountpoint: v.mountpoint.display().to_string(),
        created_at: Some(v.created_at.into()),
        containers: v.users,
    }
}

#[tonic::async_trait]
impl Volumes for Service {
    async fn create(
        &self,
        req: Request<pb::CreateVolumeRequest>,
    ) -> Result<Response<pb::Volume>, Status> {
        let name = parse(&req.into_inner().name, "name", VolumeName::parse_as)?;
        let v = self
            .runtime
            .create_volume(&name, Default::default())
            .map_err(status)?;
        Ok(Response::new(volume(v)))
    }

    async fn remove(
        &self,
        req: Request<pb::RemoveVolumeRequest>,
    ) -> Result<Response<pb::RemoveVolumeResponse>, Status> {
        let name = parse(&req.into_inner().name, "name", VolumeName::parse_as)?;
        self.runtime.remove_volume(&name).map_err(status)?;
        Ok(Response::new(pb::RemoveVolumeResponse {}))
    }

    async fn list(
        &self,
        _: Request<pb::ListVolumesRequest>,
    ) -> Result<Response<pb::ListVolumesResponse>, Status> {
        let volumes = self.runtime.volumes().into_iter().map(volume).collect();
        Ok(Response::new(pb::ListVolumesResponse { volumes }))
    }

    async fn inspect(
        &self,
        req: Request<pb::InspectVolumeRequest>,
    ) -> Result<Response<pb::Volume>, Status> {
        let name = parse(&req.into_inner().name, "name", VolumeName::parse_as)?;
        let v = self.runtime.inspect_volume(&name).map_err(status)?;
        Ok(Response::new(volume(v)))
    }
}
