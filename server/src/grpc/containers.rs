//! `rsup.v1.Containers`: each method converts its request, makes one runtime
//! call and encodes the reply.

use std::pin::Pin;
use std::time::Duration;

use rsup_proto::v1 as pb;
use rsup_proto::v1::containers_server::Containers;
use rsup_runtime::logs::Stream as LogStream;
use rsup_runtime::{ContainerInfo, ContainerState, Runtime, SpecRequest};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::status;

/// Stop timeout when the request does not set one (Docker's default).
const DEFAULT_STOP_TIMEOUT: u32 = 10;

pub struct Service {
    runtime: Runtime,
}

impl Service {
    pub fn new(runtime: Runtime) -> Self {
        Service { runtime }
    }
}

fn spec_request(spec: Option<pb::ContainerSpec>) -> SpecRequest {
    let s = spec.unwrap_or_default();
    let log = s.log.unwrap_or_default();
    SpecRequest {
        name: s.name,
        rootfs: s.rootfs,
        command: s.command,
        env: s.env,
        working_dir: s.working_dir,
        user: s.user,
        hostname: s.hostname,
        auto_remove: s.auto_remove,
        log_max_size: log.max_size_bytes,
        log_max_files: log.max_files,
    }
}

fn state(s: ContainerState) -> pb::ContainerState {
    match s {
        ContainerState::Created => pb::ContainerState::Created,
        ContainerState::Running => pb::ContainerState::Running,
        ContainerState::Exited => pb::ContainerState::Exited,
        ContainerState::Removed => pb::ContainerState::Removed,
    }
}

fn exit_status(exit: Option<rsup_runtime::ExitInfo>, error: &str) -> Option<pb::ExitStatus> {
    match exit {
        Some(e) => Some(pb::ExitStatus {
            exit_code: e.code,
            signal: e.signal,
            finished_at: Some(e.finished_at.into()),
            error: error.to_string(),
        }),
        None if !error.is_empty() => Some(pb::ExitStatus {
            exit_code: -1,
            signal: 0,
            finished_at: None,
            error: error.to_string(),
        }),
        None => None,
    }
}

fn container(c: ContainerInfo) -> pb::Container {
    let s = &c.spec;
    pb::Container {
        spec: Some(pb::ContainerSpec {
            name: s.name.clone(),
            rootfs: s.rootfs.display().to_string(),
            command: s.command.clone(),
            env: s.env.clone(),
            working_dir: s.working_dir.clone(),
            user: s.user_spec.clone(),
            hostname: s.hostname.clone(),
            auto_remove: s.auto_remove,
            log: Some(pb::LogConfig {
                max_size_bytes: s.log.max_size,
                max_files: s.log.max_files,
            }),
        }),
        state: state(c.state).into(),
        pid: c.pid,
        created_at: Some(c.created_at.into()),
        started_at: c.started_at.map(Into::into),
        exit: if c.state == ContainerState::Running {
            None
        } else {
            exit_status(c.exit, &c.error)
        },
        log_path: c.log_path.display().to_string(),
        start_count: c.start_count,
        id: c.id,
        name: c.name,
    }
}

type LogStreamOut = Pin<Box<dyn Stream<Item = Result<pb::LogEntry, Status>> + Send>>;

#[tonic::async_trait]
impl Containers for Service {
    async fn create(
        &self,
        req: Request<pb::CreateRequest>,
    ) -> Result<Response<pb::CreateResponse>, Status> {
        let c = self
            .runtime
            .create(spec_request(req.into_inner().spec))
            .await
            .map_err(status)?;
        Ok(Response::new(pb::CreateResponse {
            container: Some(container(c)),
        }))
    }

    async fn start(
        &self,
        req: Request<pb::StartRequest>,
    ) -> Result<Response<pb::StartResponse>, Status> {
        let c = self
            .runtime
            .start(&req.into_inner().container)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::StartResponse {
            container: Some(container(c)),
        }))
    }

    async fn stop(
        &self,
        req: Request<pb::StopRequest>,
    ) -> Result<Response<pb::StopResponse>, Status> {
        let r = req.into_inner();
        let timeout = Duration::from_secs(r.timeout_seconds.unwrap_or(DEFAULT_STOP_TIMEOUT).into());
        let c = self
            .runtime
            .stop(&r.container, timeout)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::StopResponse {
            container: Some(container(c)),
        }))
    }

    async fn kill(
        &self,
        req: Request<pb::KillRequest>,
    ) -> Result<Response<pb::KillResponse>, Status> {
        let r = req.into_inner();
        self.runtime
            .kill(&r.container, &r.signal)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::KillResponse {}))
    }

    async fn remove(
        &self,
        req: Request<pb::RemoveRequest>,
    ) -> Result<Response<pb::RemoveResponse>, Status> {
        let r = req.into_inner();
        self.runtime
            .remove(&r.container, r.force)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::RemoveResponse {}))
    }

    async fn list(
        &self,
        req: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let containers = self
            .runtime
            .list(req.into_inner().all)
            .into_iter()
            .map(container)
            .collect();
        Ok(Response::new(pb::ListResponse { containers }))
    }

    async fn inspect(
        &self,
        req: Request<pb::InspectRequest>,
    ) -> Result<Response<pb::InspectResponse>, Status> {
        let c = self
            .runtime
            .inspect(&req.into_inner().container)
            .map_err(status)?;
        Ok(Response::new(pb::InspectResponse {
            container: Some(container(c)),
        }))
    }

    async fn wait(
        &self,
        req: Request<pb::WaitRequest>,
    ) -> Result<Response<pb::WaitResponse>, Status> {
        let (exit, error) = self
            .runtime
            .wait(&req.into_inner().container)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::WaitResponse {
            status: exit_status(exit, &error),
        }))
    }

    type LogsStream = LogStreamOut;

    async fn logs(
        &self,
        req: Request<pb::LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        let r = req.into_inner();
        let rx = self
            .runtime
            .logs(&r.container, r.follow, r.tail)
            .map_err(status)?;
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        let stream = tokio_stream::StreamExt::map(stream, |rec| {
            Ok(pb::LogEntry {
                stream: match rec.stream {
                    LogStream::Stdout => pb::LogStream::Stdout,
                    LogStream::Stderr => pb::LogStream::Stderr,
                }
                .into(),
                time: Some(rec.time.into()),
                line: rec.line,
                partial: rec.partial,
            })
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
